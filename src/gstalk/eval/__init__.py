"""Metrics, LPIPS and SyncNet (from weights given by path), and the HTML report."""
