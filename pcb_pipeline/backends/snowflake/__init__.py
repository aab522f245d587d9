"""The Snowflake backend: the same interfaces as pcb_pipeline.backends.local, on a Snowflake account.

| module | interface | how |
|---|---|---|
| stage | Stage | internal stage via PUT / GET / LIST / REMOVE |
| warehouse | Warehouse | connection from dagster_snowflake.SnowflakeResource; write_pandas + DELETE/INSERT or MERGE |
| training | TrainingDispatcher | snowflake.ml.jobs.submit_directory on a GPU compute pool, same entrypoint |
| registry | ModelRegistry | Snowflake Model Registry custom model (custom_model.PCBDefectDetectorModel), same gate |
| inference | (batch inference) | mv.run_batch or a service through the registry, rows into DEFECT_LOGS |

Nothing here imports snowflake.ml or snowpark at module import time: those load when first used.
"""
