"""Preferences and identities: the site's preference model at work, API keys, identity links."""
