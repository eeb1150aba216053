"""The pure numerical core: models, WRM, aggregators, attacks, test shifts (numpy only)."""
