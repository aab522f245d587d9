-- pcb_pipeline: the objects the Streamlit in Snowflake app needs (container runtime). Run as ACCOUNTADMIN, after
-- 01_account_setup.sql, in one session; idempotent. Then, as PCB_PIPELINE_ROLE: `pcb-pipeline deploy-app` (uploads the
-- package to @APP_STAGE/app, CREATE STREAMLIT ... RUNTIME_NAME = 'SYSTEM$ST_CONTAINER_RUNTIME_PY3_11', ADD LIVE
-- VERSION); `pcb-pipeline deploy-app --dry-run` prints those statements.
SET pcb_role = 'PCB_PIPELINE_ROLE';
SET pcb_schema = 'PCB.PIPELINE';
SET pcb_app_stage = 'PCB.PIPELINE.APP_STAGE';
SET pcb_app_pool = 'PCB_APP_POOL';
SET pcb_pypi_rule = 'PCB.PIPELINE.PCB_PYPI_RULE';
SET pcb_pypi_eai = 'PCB_PYPI_EAI';

-- A small CPU pool: the container runtime serves one long-running, shared app instance (ONNX Runtime inference is
-- 15-55 ms per board on 2 vCPU, bench/APP_RESULTS.md); no GPU.
CREATE COMPUTE POOL IF NOT EXISTS IDENTIFIER($pcb_app_pool)
  MIN_NODES = 1 MAX_NODES = 1 INSTANCE_FAMILY = CPU_X64_S AUTO_RESUME = TRUE AUTO_SUSPEND_SECS = 3600
  COMMENT = 'pcb_pipeline: Streamlit app (container runtime)';

-- The container installs requirements.txt from PyPI: egress to the index and its file host only.
CREATE NETWORK RULE IF NOT EXISTS IDENTIFIER($pcb_pypi_rule) MODE = EGRESS TYPE = HOST_PORT
  VALUE_LIST = ('pypi.org:443', 'files.pythonhosted.org:443');
SET pcb_pypi_eai_sql = 'CREATE EXTERNAL ACCESS INTEGRATION IF NOT EXISTS ' || $pcb_pypi_eai
  || ' ALLOWED_NETWORK_RULES = (' || $pcb_pypi_rule || ') ENABLED = TRUE';
EXECUTE IMMEDIATE $pcb_pypi_eai_sql;

-- The app's own stage (source files), apart from MODEL_STAGE (data and models).
CREATE STAGE IF NOT EXISTS IDENTIFIER($pcb_app_stage) DIRECTORY = (ENABLE = TRUE)
  ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE');

GRANT CREATE STREAMLIT ON SCHEMA IDENTIFIER($pcb_schema) TO ROLE IDENTIFIER($pcb_role);
GRANT READ, WRITE ON STAGE IDENTIFIER($pcb_app_stage) TO ROLE IDENTIFIER($pcb_role);
GRANT USAGE, MONITOR ON COMPUTE POOL IDENTIFIER($pcb_app_pool) TO ROLE IDENTIFIER($pcb_role);
GRANT USAGE ON INTEGRATION IDENTIFIER($pcb_pypi_eai) TO ROLE IDENTIFIER($pcb_role);
-- Viewers: GRANT USAGE ON STREAMLIT PCB.PIPELINE.PCB_DEFECT_APP TO ROLE <viewer role>; (after deploy-app)
