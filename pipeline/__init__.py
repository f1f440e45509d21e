"""livegraft's server side: errata, kernel matrix, plan, report and the stages after them."""
