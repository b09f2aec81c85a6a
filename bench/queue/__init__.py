"""Queue benchmark: corral against PgQueuer, Procrastinate and a naive SKIP LOCKED loop."""
