"""Verifiers: answer extraction and math equivalence, reward models, LLM judges.
Strategies call them through a small protocol; they land with their own issue.
"""
