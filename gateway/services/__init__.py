"""Business logic of one brand's gateway. Routes validate and authorise, then call a service."""
