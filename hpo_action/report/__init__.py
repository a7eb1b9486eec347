"""What people read: tables for the terminal and markdown, plots, GitHub Actions output."""
