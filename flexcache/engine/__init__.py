"""The cache itself: embedding, index, planner, policy, store and the engine."""
