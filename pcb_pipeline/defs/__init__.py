"""Dagster definitions: thin assets, checks, jobs and resources over the layers below."""
