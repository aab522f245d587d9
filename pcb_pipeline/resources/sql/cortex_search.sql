-- SOP manual chunks and the Cortex Search service over them (Snowflake dialect).
-- Statements are separated by semicolons at line ends. PCB_WH is the default warehouse name;
-- pcb_pipeline.knowledge.snowflake_search.cortex_search_statements(warehouse=...) substitutes another.

-- One row per chunk of a manual PDF, written by the sop_corpus asset (pcb_pipeline.knowledge.corpus.chunks_to_frame).
-- `chunk` is the searchable text; the other columns come back with every search result for the citations.
CREATE TABLE IF NOT EXISTS SOP_CHUNKS (
    chunk_id         VARCHAR NOT NULL PRIMARY KEY,
    document         VARCHAR NOT NULL,
    doc_id           VARCHAR NOT NULL,
    title            VARCHAR,
    page             INTEGER NOT NULL,
    section          VARCHAR,
    defect_category  VARCHAR NOT NULL,
    defect_class     VARCHAR NOT NULL,
    chunk            VARCHAR NOT NULL
);

-- Hybrid (vector + keyword) search over the chunk text; defect_category, defect_class and document can be filtered
-- on, e.g. {"@eq": {"defect_category": "Etching"}}. Refreshed from SOP_CHUNKS within TARGET_LAG.
CREATE OR REPLACE CORTEX SEARCH SERVICE PCB_SOP_SEARCH_SERVICE
  ON chunk
  ATTRIBUTES defect_category, defect_class, document
  WAREHOUSE = PCB_WH
  TARGET_LAG = '1 hour'
  EMBEDDING_MODEL = 'snowflake-arctic-embed-m-v1.5'
  COMMENT = 'PCB SOP manuals: repair, rework and acceptability procedures (pcb_pipeline sop_search_service)'
  AS (
    SELECT chunk, chunk_id, document, doc_id, title, page, section, defect_category, defect_class
    FROM SOP_CHUNKS
  );
