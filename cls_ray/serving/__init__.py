"""What a serving replica does that is not Ray: the set of model versions a generator holds,
the HTTP request and response models, OpenAI response shaping, batching plans, session
records, and the Serve application spec (`actors/serve/` wraps these in deployments)."""
