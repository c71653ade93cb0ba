"""Level2 data layer: canonical schemas, market profiles, simulator, loaders, cleaning and quality reports."""
