"""Shared fixtures for the knowledge tests: manuals, corpus, one embedding model per session, a filled warehouse."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")



@pytest.fixture(scope="session")
def manual_pdfs(tmp_path_factory):
    from pcb_pipeline.knowledge.manuals import build_manual_pdfs

    return build_manual_pdfs(tmp_path_factory.mktemp("manual_pdfs"))


@pytest.fixture(scope="session")
def corpus(manual_pdfs):
    from pcb_pipeline.knowledge.corpus import build_corpus

    return build_corpus(manual_pdfs)


@pytest.fixture(scope="session")
def embedder():
    """The embedding model, loaded once per test session (a few seconds)."""
    from pcb_pipeline.knowledge.search import get_embedder

    return get_embedder()


@pytest.fixture(scope="session")
def manual_search(corpus, embedder):
    from pcb_pipeline.knowledge.search import LocalManualSearch

    return LocalManualSearch.from_chunks(corpus, embedder=embedder)


@pytest.fixture(scope="session")
def model():
    from pcb_pipeline.knowledge.semantic_model import load_semantic_model

    return load_semantic_model()


@pytest.fixture(scope="session")
def sample_frames():
    from pcb_pipeline.knowledge import sample_data

    return sample_data.generate()


@pytest.fixture(scope="session")
def warehouse(sample_frames):
    """The project's local warehouse (DuckDB, Snowflake SQL transpiled) with the sample defect data."""
    from pcb_pipeline.backends.local import DuckDBWarehouse
    from pcb_pipeline.knowledge import sample_data

    wh = DuckDBWarehouse(":memory:")
    wh.ensure_schema()
    sample_data.load_into(wh, sample_frames)
    return wh
