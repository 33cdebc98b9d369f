"""The recording path: validate, enrich, sign, append durably, forward."""
