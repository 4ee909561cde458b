"""Extensions: health_check, file_storage, and the agent's own metrics."""
