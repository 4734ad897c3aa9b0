if __name__ == "__main__":  # worker processes import this module again: do not run then
    from turnbench.entry import main

    main()
