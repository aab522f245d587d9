-- pcb_pipeline: one-time Snowflake setup, run by an administrator (ACCOUNTADMIN, or SECURITYADMIN + SYSADMIN
-- where marked) in ONE session, top to bottom: a Snowsight worksheet, `snow sql -f`, or `snowsql -f`.
-- Idempotent: every object is CREATE ... IF NOT EXISTS and GRANT is a no-op when already granted, so it can be
-- re-run after editing the names below. Least privilege: the pipeline role owns nothing at account level; it gets
-- exactly what the pipeline uses (see section 7), and SYSADMIN keeps ownership of database, schema and stages.
--
-- Names: change them here only (session variables); the pipeline reads the same names from its environment:
--   SNOWFLAKE_ROLE, SNOWFLAKE_WAREHOUSE, SNOWFLAKE_DATABASE, SNOWFLAKE_SCHEMA, PCB_SNOWFLAKE_STAGE,
--   PCB_SNOWFLAKE_JOB_STAGE, PCB_SNOWFLAKE_COMPUTE_POOL, PCB_SNOWFLAKE_EAI.

-- 0. names ----------------------------------------------------------------------------------------------------------
-- pcb_user: an existing service user (section 1 grants it the role; see docs/snowflake.md for key-pair auth).
-- pcb_stage: raw images, datasets, weights, predictions (directory table); pcb_job_stage: ML Job payloads/outputs.
SET pcb_role = 'PCB_PIPELINE_ROLE';
SET pcb_user = 'PCB_PIPELINE_USER';
SET pcb_warehouse = 'PCB_WH';
SET pcb_database = 'PCB';
SET pcb_schema = 'PIPELINE';
SET pcb_stage = 'MODEL_STAGE';
SET pcb_job_stage = 'ML_JOB_STAGE';
SET pcb_network_rule = 'PCB_EGRESS_RULE';
SET pcb_eai = 'PCB_TRAINING_EAI';
SET pcb_compute_pool = 'PCB_GPU_POOL';

-- 1. role (SECURITYADMIN) ---------------------------------------------------------------------------------------------
USE ROLE SECURITYADMIN;
CREATE ROLE IF NOT EXISTS IDENTIFIER($pcb_role) COMMENT = 'pcb_pipeline: Dagster assets, ML Jobs, model registry';
GRANT ROLE IDENTIFIER($pcb_role) TO ROLE SYSADMIN;
GRANT ROLE IDENTIFIER($pcb_role) TO USER IDENTIFIER($pcb_user);

-- 2. warehouse (SYSADMIN) ---------------------------------------------------------------------------------------------
USE ROLE SYSADMIN;
CREATE WAREHOUSE IF NOT EXISTS IDENTIFIER($pcb_warehouse)
    WAREHOUSE_SIZE = 'XSMALL' AUTO_SUSPEND = 60 AUTO_RESUME = TRUE INITIALLY_SUSPENDED = TRUE
    COMMENT = 'pcb_pipeline: SQL, write_pandas loads, ML Job query warehouse';

-- 3. database and schema (SYSADMIN) ------------------------------------------------------------------------------------
CREATE DATABASE IF NOT EXISTS IDENTIFIER($pcb_database) COMMENT = 'pcb_pipeline';
USE DATABASE IDENTIFIER($pcb_database);
CREATE SCHEMA IF NOT EXISTS IDENTIFIER($pcb_schema) COMMENT = 'pcb_pipeline: tables, stages, models, jobs';
USE SCHEMA IDENTIFIER($pcb_schema);

-- 4. internal stages (SYSADMIN): server-side encryption, which SPCS stage mounts and ML Jobs require ----------------------
CREATE STAGE IF NOT EXISTS IDENTIFIER($pcb_stage)
    DIRECTORY = (ENABLE = TRUE)
    ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')
    COMMENT = 'pcb_pipeline: raw/deeppcb, datasets/yolo, models/<run>, predictions/<batch>, inference/<batch>';
CREATE STAGE IF NOT EXISTS IDENTIFIER($pcb_job_stage)
    ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')
    COMMENT = 'pcb_pipeline: ML Job payloads (<job>/app) and outputs (<job>/output)';

-- 5. egress for pip, GitHub and Hugging Face (network rule: SYSADMIN; integration: ACCOUNTADMIN) ------------------------
CREATE NETWORK RULE IF NOT EXISTS IDENTIFIER($pcb_network_rule)
    MODE = EGRESS
    TYPE = HOST_PORT
    VALUE_LIST = ('pypi.org:443', 'files.pythonhosted.org:443',
                  'github.com:443', 'api.github.com:443', 'codeload.github.com:443', 'raw.githubusercontent.com:443',
                  'objects.githubusercontent.com:443', 'release-assets.githubusercontent.com:443',
                  'huggingface.co:443', 'cdn-lfs.huggingface.co:443', 'cdn-lfs-us-1.huggingface.co:443',
                  'cdn-lfs.hf.co:443', 'cas-bridge.xethub.hf.co:443')
    COMMENT = 'pcb_pipeline: pip install, ultralytics assets from GitHub releases, Hugging Face downloads';

USE ROLE ACCOUNTADMIN;
-- ALLOWED_NETWORK_RULES takes object names, not IDENTIFIER(): the statement is assembled from the names above.
SET pcb_eai_sql = 'CREATE EXTERNAL ACCESS INTEGRATION IF NOT EXISTS ' || $pcb_eai
    || ' ALLOWED_NETWORK_RULES = (' || $pcb_database || '.' || $pcb_schema || '.' || $pcb_network_rule || ')'
    || ' ENABLED = TRUE';
EXECUTE IMMEDIATE $pcb_eai_sql;

-- 6. GPU compute pool (ACCOUNTADMIN): GPU_NV_M = 4x NVIDIA A10G; suspends itself when idle ----------------------------
CREATE COMPUTE POOL IF NOT EXISTS IDENTIFIER($pcb_compute_pool)
    MIN_NODES = 1
    MAX_NODES = 1
    INSTANCE_FAMILY = GPU_NV_M
    AUTO_RESUME = TRUE
    AUTO_SUSPEND_SECS = 600
    INITIALLY_SUSPENDED = TRUE
    COMMENT = 'pcb_pipeline: YOLOv12 training ML Jobs, batch inference, notebook on Container Runtime';

-- 7. grants: exactly what the pipeline uses ----------------------------------------------------------------------------
GRANT USAGE ON WAREHOUSE IDENTIFIER($pcb_warehouse) TO ROLE IDENTIFIER($pcb_role);
GRANT USAGE ON DATABASE IDENTIFIER($pcb_database) TO ROLE IDENTIFIER($pcb_role);
GRANT USAGE ON SCHEMA IDENTIFIER($pcb_schema) TO ROLE IDENTIFIER($pcb_role);
-- tables (sql/tables.sql, created IF NOT EXISTS by the pipeline) and the temporary tables of replace_rows/upsert
GRANT CREATE TABLE ON SCHEMA IDENTIFIER($pcb_schema) TO ROLE IDENTIFIER($pcb_role);
-- write_pandas uploads through a temporary stage of its own
GRANT CREATE STAGE ON SCHEMA IDENTIFIER($pcb_schema) TO ROLE IDENTIFIER($pcb_role);
-- ML Jobs, batch inference jobs and inference services are services in this schema
GRANT CREATE SERVICE ON SCHEMA IDENTIFIER($pcb_schema) TO ROLE IDENTIFIER($pcb_role);
-- Snowflake Model Registry versions, and the image repository model serving builds into
GRANT CREATE MODEL ON SCHEMA IDENTIFIER($pcb_schema) TO ROLE IDENTIFIER($pcb_role);
GRANT CREATE IMAGE REPOSITORY ON SCHEMA IDENTIFIER($pcb_schema) TO ROLE IDENTIFIER($pcb_role);
-- the data scientist's Snowflake Notebook (notebooks/pcb_training.ipynb)
GRANT CREATE NOTEBOOK ON SCHEMA IDENTIFIER($pcb_schema) TO ROLE IDENTIFIER($pcb_role);
GRANT READ, WRITE ON STAGE IDENTIFIER($pcb_stage) TO ROLE IDENTIFIER($pcb_role);
GRANT READ, WRITE ON STAGE IDENTIFIER($pcb_job_stage) TO ROLE IDENTIFIER($pcb_role);
GRANT USAGE, MONITOR ON COMPUTE POOL IDENTIFIER($pcb_compute_pool) TO ROLE IDENTIFIER($pcb_role);
GRANT USAGE ON INTEGRATION IDENTIFIER($pcb_eai) TO ROLE IDENTIFIER($pcb_role);
-- Cortex: AI_COMPLETE (cited SOP answers), Cortex Analyst over sql/semantic_model.yaml, and the SOP search service
-- (sql/cortex_search.sql). CORTEX_USER is granted to PUBLIC by default; granting it to the pipeline role keeps the
-- pipeline working in accounts whose admins revoked that default.
GRANT DATABASE ROLE SNOWFLAKE.CORTEX_USER TO ROLE IDENTIFIER($pcb_role);
GRANT CREATE CORTEX SEARCH SERVICE ON SCHEMA IDENTIFIER($pcb_schema) TO ROLE IDENTIFIER($pcb_role);

-- Next: sql/setup/02_pipeline_session.sql as the pipeline role (creates the tables and checks the grants).
