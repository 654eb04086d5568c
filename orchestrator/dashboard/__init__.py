"""`glo dashboard`: a read-only live web view of a GLO database (see cli.py, app.py, static/)."""
