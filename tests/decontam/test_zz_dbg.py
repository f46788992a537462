from tests.decontam.test_cases import *
import tests.decontam.test_cases as T
def test_dbg(check, web, zh):
    q = bench_record("gsm8k", 7)["question"]
    planted=_plant(web[0]["text"], q)
    removed, rows, rem = check([_doc("d0", planted)])
    m=rows[0]; print(repr(planted[m["doc_start"]:m["doc_end"]])); print(repr(q))
    sol = bench_record("olympiadbench", 0)["solution"][0]
    words = sol.split(" "); start = len(words) // 3
    frag = " ".join(words[start: start + int(len(words) * 0.3)])
    removed, rows, _ = check([_doc("f0", _plant(web[6]["text"], frag))])
    for r in rows: print(r['benchmark'], r['item_id'], r['field'], r['grams_matched'], r['lcs_ratio'])
    q = bench_record("gsm8k", 100)["question"]
    from corpus.textnorm import tokenize
    toks = tokenize(q); gram = " ".join(toks[10:23])
    removed, rows, _ = check([_doc("g0", _plant(web[7]["text"], gram))])
    for r in rows: print(r['benchmark'], r['item_id'], r['field'], r['grams_matched'], r['lcs_ratio'])
    rec = bench_record("math", 4000); print(_disguise(rec["problem"])[:300])
