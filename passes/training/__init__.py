"""Training passes: reverse-mode autodiff over the IR, losses, optimizer updates and
rematerialisation under a memory budget."""
