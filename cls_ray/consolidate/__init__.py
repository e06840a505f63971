"""Consolidation: extraction f(τ) and its gate, PPO core algorithms, SFT and PPO jobs."""
