-- pcb_pipeline: checks, as the pipeline role, that sql/setup/01_account_setup.sql gave it what it needs.
-- Run in one session after 01, then run sql/tables.sql in the same session (the pipeline also creates the tables
-- itself, IF NOT EXISTS, the first time its warehouse resource is used). Read-only apart from the tables.

SET pcb_role = 'PCB_PIPELINE_ROLE';
SET pcb_warehouse = 'PCB_WH';
SET pcb_database = 'PCB';
SET pcb_schema = 'PIPELINE';
SET pcb_compute_pool = 'PCB_GPU_POOL';
SET pcb_eai = 'PCB_TRAINING_EAI';

USE ROLE IDENTIFIER($pcb_role);
USE WAREHOUSE IDENTIFIER($pcb_warehouse);
USE DATABASE IDENTIFIER($pcb_database);
USE SCHEMA IDENTIFIER($pcb_schema);

-- the stages answer (empty on a new account)
LIST @MODEL_STAGE;
LIST @ML_JOB_STAGE;

-- what the role holds: expect USAGE (warehouse, database, schema, compute pool, integration), READ+WRITE (stages),
-- CREATE TABLE / STAGE / SERVICE / MODEL / IMAGE REPOSITORY / NOTEBOOK (schema), MONITOR (compute pool)
SHOW GRANTS TO ROLE IDENTIFIER($pcb_role);
DESCRIBE COMPUTE POOL IDENTIFIER($pcb_compute_pool);
DESCRIBE INTEGRATION IDENTIFIER($pcb_eai);
