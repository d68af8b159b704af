"""The paper's experiments (E1-E7), their validity gates, statistics and reports."""
