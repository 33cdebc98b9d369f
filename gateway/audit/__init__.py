"""The audit trail: chain verification, exports, proof packs and consent reports."""
