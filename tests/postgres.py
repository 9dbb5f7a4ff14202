"""The throwaway PostgreSQL cluster of the tests: `jigd.demo.pgcluster` (product code, as
`jigd demo --stations N` starts one too), named here for the tests that import it from here."""

from __future__ import annotations

from jigd.demo.pgcluster import PostgresCluster, postgres_bindir

__all__ = ["PostgresCluster", "postgres_bindir"]
