"""Knowledge assets: SOP manuals (PDF) -> chunks -> search index; the semantic model for questions over the logs."""

import dagster as dg

from pcb_pipeline.defs.assets import defect_logs, pcb_metadata
from pcb_pipeline.defs.scratch import scratch_dir
from pcb_pipeline.defs.resources import SearchIndexProvider, StageProvider, WarehouseProvider
from pcb_pipeline.knowledge.semantic_model import SEMANTIC_MODEL_STAGE_PATH

MANUALS_PREFIX = "manuals"
CHUNKS_STAGE_PATH = "knowledge/sop_chunks.jsonl"


@dg.asset(group_name="knowledge", kinds={"pdf", "files"})
def sop_documents(stage: StageProvider) -> dg.MaterializeResult:
    """The project's SOP and repair manuals (pcb_pipeline/resources/manuals) rendered to PDF and put on the stage under manuals/."""
    from pypdf import PdfReader

    from pcb_pipeline.knowledge.api import build_manual_pdfs

    st = stage.get()
    pdfs = build_manual_pdfs(scratch_dir("manuals"))
    st.remove_prefix(MANUALS_PREFIX)
    pages = {}
    for pdf in pdfs:
        st.put_file(pdf, f"{MANUALS_PREFIX}/{pdf.name}")
        pages[pdf.name] = len(PdfReader(str(pdf)).pages)
    return dg.MaterializeResult(metadata={"documents": len(pdfs), "pages": dg.MetadataValue.json(pages),
                                          "stage_uri": st.uri(MANUALS_PREFIX)})


@dg.asset(group_name="knowledge", kinds={"python"}, deps=[sop_documents])
def sop_corpus(stage: StageProvider) -> dg.MaterializeResult:
    """PDF text extracted with page numbers, chunked, each chunk tagged with its defect_category and class."""
    from collections import Counter

    from pcb_pipeline.knowledge.api import build_corpus, save_chunks

    st = stage.get()
    local = st.get_dir(MANUALS_PREFIX, scratch_dir("corpus") / "pdfs")
    chunks = build_corpus(sorted(local.glob("*.pdf")))
    if not chunks:
        raise dg.Failure("no text could be extracted from the manuals")
    st.put_file(save_chunks(chunks, scratch_dir("corpus_out") / "sop_chunks.jsonl"), CHUNKS_STAGE_PATH)
    return dg.MaterializeResult(metadata={
        "chunks": len(chunks),
        "per_category": dg.MetadataValue.json(dict(Counter(c.defect_category for c in chunks))),
        "per_defect_class": dg.MetadataValue.json(dict(Counter(c.defect_class for c in chunks))),
        "sample": dg.MetadataValue.md(f"**{chunks[0].document} p.{chunks[0].page}** — {chunks[0].text[:300]}"),
    })


@dg.asset(group_name="knowledge", kinds={"python"}, deps=[sop_corpus])
def sop_search_service(stage: StageProvider, search_index: SearchIndexProvider) -> dg.MaterializeResult:
    """The search service over the chunks: a local hybrid index (BM25 + embeddings), or Cortex Search on Snowflake."""
    from pcb_pipeline.knowledge.api import load_chunks

    chunks = load_chunks(stage.get().get_file(CHUNKS_STAGE_PATH, scratch_dir("search") / "sop_chunks.jsonl"))
    description = search_index.publish(chunks)
    return dg.MaterializeResult(metadata={"chunks_indexed": len(chunks), "service": description})


@dg.asset(group_name="knowledge", kinds={"yaml"}, deps=[defect_logs, pcb_metadata])
def semantic_model(stage: StageProvider) -> dg.MaterializeResult:
    """The Cortex Analyst semantic model (sql/semantic_model.yaml), validated and put on the stage for Analyst."""
    from pcb_pipeline.knowledge.semantic_model import load_semantic_model, validate_semantic_model

    model = load_semantic_model()
    problems = validate_semantic_model(model)
    if problems:
        raise dg.Failure("semantic model is invalid: " + "; ".join(problems))
    f = scratch_dir("semantic_model") / "semantic_model.yaml"
    f.write_text(model.to_yaml())
    stage.get().put_file(f, SEMANTIC_MODEL_STAGE_PATH)
    return dg.MaterializeResult(metadata={
        "tables": dg.MetadataValue.json(sorted(model.physical_tables)),
        "verified_queries": len(model.verified_queries),
        "stage_path": SEMANTIC_MODEL_STAGE_PATH,
    })


@dg.asset_check(asset=semantic_model, description="every verified query translates, passes the guard and runs")
def verified_queries_run(warehouse: WarehouseProvider) -> dg.AssetCheckResult:
    from pcb_pipeline.knowledge.api import verify_semantic_model

    results = verify_semantic_model(warehouse.get())
    failed = [r for r in results if not r["ok"]]
    return dg.AssetCheckResult(passed=not failed, metadata={
        "verified_queries": len(results), "failed": dg.MetadataValue.json([{k: r.get(k) for k in ("name", "error")}
                                                                           for r in failed])})


@dg.asset_check(asset=sop_search_service, description="the mousebite question is answered with mousebite citations")
def mousebite_question_cited(search_index: SearchIndexProvider) -> dg.AssetCheckResult:
    answer = search_index.ask("What are the causes of 'mousebite' defects and is it acceptable under Class 2?")
    cited = [c for c in answer["citations"] if "mousebite" in (c.get("defect_class", "") + c["text"]).lower()]
    return dg.AssetCheckResult(passed=bool(cited), metadata={"citations": len(answer["citations"]),
                                                             "mousebite_citations": len(cited)})


knowledge_assets = [sop_documents, sop_corpus, sop_search_service, semantic_model]
knowledge_checks = [verified_queries_run, mousebite_question_cited]
