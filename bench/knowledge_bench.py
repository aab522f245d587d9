"""Accuracy and latency of both knowledge paths (local backend): questions over the defect data and cited answers
from the SOP manuals, on the evaluation sets in bench/eval/.

    .venv/bin/python bench/knowledge_bench.py [--json bench/knowledge_results.json]

Data questions run against the project's DuckDB warehouse filled with pcb_pipeline.knowledge.sample_data; an answer
is correct when its rows equal the hand-written reference query's rows. Manual questions are correct when a citation
comes from the expected document (and section, when the set names one). Nothing reaches the network.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0, 0, 0)
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_avg_1m_at_start": round(load[0], 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--repeat", type=int, default=1, help="answer every question this many times (latency only)")
    args = ap.parse_args(argv)

    from pcb_pipeline import settings

    with tempfile.TemporaryDirectory() as home:
        settings.configure(Path(home))
        res = run(args.repeat)
    res["machine"] = machine()
    res["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    res["command"] = "python bench/knowledge_bench.py" + (f" --repeat {args.repeat}" if args.repeat != 1 else "")
    print(report(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    ok = all(v["accuracy"] >= 0.9 for k, v in res.items() if k.startswith(("data:", "manuals:")))
    return 0 if ok else 1


def run(repeat: int) -> dict:
    from pcb_pipeline.backends.local import DuckDBWarehouse
    from pcb_pipeline.knowledge import sample_data
    from pcb_pipeline.knowledge.api import ask_data
    from pcb_pipeline.knowledge.corpus import build_corpus
    from pcb_pipeline.knowledge.evaluation import evaluate_data, evaluate_manuals, load_eval
    from pcb_pipeline.knowledge.manuals import build_manual_pdfs
    from pcb_pipeline.knowledge.search import LocalManualSearch, get_embedder

    out: dict = {"timings_s": {}}
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        pdfs = build_manual_pdfs(Path(d))
        out["timings_s"]["build_pdfs"] = time.perf_counter() - t
        t = time.perf_counter()
        chunks = build_corpus(pdfs)
        out["timings_s"]["pdf_to_chunks"] = time.perf_counter() - t
    out["corpus"] = {"documents": len(pdfs), "chunks": len(chunks)}
    t = time.perf_counter()
    emb = get_embedder()
    out["timings_s"]["load_embedding_model"] = time.perf_counter() - t
    t = time.perf_counter()
    search = LocalManualSearch.from_chunks(chunks, embedder=emb)
    out["timings_s"]["embed_and_index"] = time.perf_counter() - t

    wh = DuckDBWarehouse(":memory:")
    wh.ensure_schema()
    t = time.perf_counter()
    loaded = sample_data.load_into(wh)
    out["timings_s"]["load_sample_data"] = time.perf_counter() - t
    out["sample_data_rows"] = loaded

    # first call: also learns dimension values from the warehouse
    t = time.perf_counter()
    ask_data("How many defects per line?", wh)
    out["timings_s"]["first_data_question_cold"] = time.perf_counter() - t

    for name in ("data_questions.yaml", "data_questions_holdout.yaml"):
        items = load_eval(name)
        rep = evaluate_data(ask_data, wh, items)
        for _ in range(repeat - 1):
            rep.latencies_ms += evaluate_data(ask_data, wh, items).latencies_ms
        out[f"data:{name}"] = {"accuracy": rep.accuracy, "correct": rep.correct, "total": rep.total,
                               "latency": rep.latency(), "failures": rep.failures}
    for name in ("manual_questions.yaml", "manual_questions_holdout.yaml"):
        items = load_eval(name)
        rep = evaluate_manuals(search, items)
        for _ in range(repeat - 1):
            rep.latencies_ms += evaluate_manuals(search, items).latencies_ms
        out[f"manuals:{name}"] = {"accuracy": rep.accuracy, "correct": rep.correct, "total": rep.total,
                                  "latency": rep.latency(), **rep.extra, "failures": rep.failures}
    out["timings_s"] = {k: round(v, 3) for k, v in out["timings_s"].items()}
    return out


def report(res: dict) -> str:
    lines = [f"date: {res['date']}", f"command: {res['command']}", f"machine: {json.dumps(res['machine'])}",
             f"corpus: {res['corpus']}  sample rows: {res['sample_data_rows']}",
             f"one-off timings (s): {json.dumps(res['timings_s'])}", "",
             "| set | correct | accuracy | p50 ms | p95 ms | max ms | retrieval hit@1 | hit@3 |",
             "|---|---|---|---|---|---|---|---|"]
    for k, v in res.items():
        if not k.startswith(("data:", "manuals:")):
            continue
        lat = v["latency"]
        h1 = f"{v['retrieval_hit@1']:.2f}" if "retrieval_hit@1" in v else "-"
        h3 = f"{v['retrieval_hit@3']:.2f}" if "retrieval_hit@3" in v else "-"
        lines.append(f"| {k} | {v['correct']}/{v['total']} | {v['accuracy']:.3f} | {lat.get('p50_ms')} | "
                     f"{lat.get('p95_ms')} | {lat.get('max_ms')} | {h1} | {h3} |")
    fails = [(k, f) for k, v in res.items() if k.startswith(("data:", "manuals:")) for f in v["failures"]]
    if fails:
        lines.append("")
        lines.append("failures:")
        lines += [f"- {k}: {json.dumps(f, default=str)[:400]}" for k, f in fails]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
