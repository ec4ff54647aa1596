"""The papers' studies as compositions of plans, engine, store, analyses and figures."""
