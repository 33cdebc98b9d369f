"""Self-service data subject rights requests (issue 13): types, deadlines, workflow, fulfilment."""
