"""Ray actors and Serve deployments: thin shells around `cls_ray` objects."""
