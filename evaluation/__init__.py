"""evaluation: ranking and classification metrics, protocols, breakdowns, bootstrap."""
