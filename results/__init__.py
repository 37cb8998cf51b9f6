"""Result records -> pandas -> the paper's tables, reports and plots."""
