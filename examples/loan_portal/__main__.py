from examples.loan_portal.run import main

main()
