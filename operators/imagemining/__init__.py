"""Operators of the imagemining DAG: the knowledge base in memory (kb) or in SQLite (kb_store), Visual-Jump paths and questions (qa)."""
