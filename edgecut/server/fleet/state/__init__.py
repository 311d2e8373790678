"""What the fleet keeps: the registry (SQLAlchemy), fleet history and the artifact store (local or S3)."""
