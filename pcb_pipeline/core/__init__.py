"""Pure logic: no Dagster, no Snowflake, nothing of ours imported."""
