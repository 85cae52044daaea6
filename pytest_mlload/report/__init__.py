"""Reports: terminal table, JSON, Markdown and plots, all built from the same records."""
