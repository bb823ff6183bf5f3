"""The studies behind factoryedge's defaults; run from the repository root, never installed."""
