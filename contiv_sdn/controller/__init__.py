"""The controller: Redis state -> compiled flows -> every switch, kept converged."""
