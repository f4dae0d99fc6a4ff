"""python -m ktap.cli"""
import sys

from ktap.cli.main import main

sys.exit(main())
