"""Math-aware HTML/WARC → text extraction (issue 12): reader, math → LaTeX, main content, stage."""
