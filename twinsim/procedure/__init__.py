"""The procedure: a vertebroplasty rehearsed (or run) step by step over the HAL, from two X-rays to both guides placed."""
