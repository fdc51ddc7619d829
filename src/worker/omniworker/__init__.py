"""omniworker: the runtime of one omnipkgd worker process (stdlib only,
Python 3.8 and later).

    frame    framing over the private socket to the daemon
    capture  per-job capture of fds 1 and 2
    execute  running one job: globals, `result`, errors
    arrays   shared-memory arrays: mappings, "arrays"/"bind", result_array
    bubbles  a spec's bubble directories first on sys.path
    serve    process set-up and the worker's request loop
    zygote   the fork template and the workers it forks
    main     the command line

The messages are described once, in src/proto.h (worker channel).
"""
