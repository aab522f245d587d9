-- Warehouse tables, Snowflake dialect. Run as-is on Snowflake; transpiled with sqlglot for the local DuckDB.
-- Statements are separated by semicolons at line ends; each is idempotent.

CREATE TABLE IF NOT EXISTS PCB_METADATA (
    board_id            VARCHAR NOT NULL PRIMARY KEY,
    board_group         VARCHAR,
    manufacturing_date  DATE,
    factory_line_id     VARCHAR,
    product_type        VARCHAR,
    production_shift    VARCHAR,
    source_image_path   VARCHAR
);

-- One row per detection. Re-running a batch replaces its rows (keyed by batch_id), so nothing is duplicated.
CREATE TABLE IF NOT EXISTS DEFECT_LOGS (
    inference_id             VARCHAR NOT NULL PRIMARY KEY,
    batch_id                 VARCHAR NOT NULL,
    board_id                 VARCHAR NOT NULL,
    timestamp                TIMESTAMP_NTZ NOT NULL,
    detected_class           VARCHAR NOT NULL,
    class_id                 INTEGER NOT NULL,
    confidence_score         FLOAT NOT NULL,
    bounding_box_coordinates VARIANT,
    x1                       FLOAT,
    y1                       FLOAT,
    x2                       FLOAT,
    y2                       FLOAT,
    image_width              INTEGER,
    image_height             INTEGER,
    factory_line_id          VARCHAR,
    model_version            VARCHAR,
    run_id                   VARCHAR,
    image_path               VARCHAR
);

-- One row per inspected image, defect-free boards included: the denominator of yield and scrap rates.
CREATE TABLE IF NOT EXISTS BOARD_INSPECTIONS (
    batch_id          VARCHAR NOT NULL,
    board_id          VARCHAR NOT NULL,
    timestamp         TIMESTAMP_NTZ NOT NULL,
    defect_count      INTEGER NOT NULL,
    factory_line_id   VARCHAR,
    model_version     VARCHAR,
    run_id            VARCHAR,
    image_path        VARCHAR NOT NULL,
    PRIMARY KEY (batch_id, image_path)
);
