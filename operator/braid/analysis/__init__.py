"""Reading runs back: pictures of workflows and runs."""
