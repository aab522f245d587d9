"""Constants the knowledge tests share (imported by name; pytest puts this folder on sys.path)."""
GOLDEN_QUERY = ("SELECT detected_class, COUNT(*) FROM DEFECT_LOGS WHERE factory_line_id = 'SHANGHAI' "
                "AND timestamp >= DATEADD(week, -1, CURRENT_DATE()) GROUP BY detected_class")
GOLDEN_QUESTION = "Show me the breakdown of defect types for the Shanghai line last week"
SAMPLE_RAG_PROMPT = "What are the causes of 'mousebite' defects and is it acceptable under Class 2 requirements?"
