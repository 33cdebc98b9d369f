"""Pure core: settings, errors, the model, jurisdiction rules, language negotiation."""
