"""City Vitals."""
