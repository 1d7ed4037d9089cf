"""Task transport between the conductor and the workers: in-process (embedded) or Celery."""
