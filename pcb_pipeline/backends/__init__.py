"""Where data lives: one interface per concern, a local and a Snowflake implementation of each.

Pick the implementation with PCB_BACKEND=local|snowflake (see pcb_pipeline.backends.factory).
"""
