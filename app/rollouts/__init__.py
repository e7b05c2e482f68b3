"""Rollouts: which arm a request goes to (`split`) and what a rollout's counters say should happen next
(`decision`). Both are pure functions of their inputs, so every replica computes the same arm and the one replica
that decides needs nothing but the counters it read from the database."""
