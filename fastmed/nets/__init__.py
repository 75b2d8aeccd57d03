"""Network architectures shared by tasks, built by name through ``registry``."""
