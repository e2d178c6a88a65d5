"""xraylake: AWS X-Ray traces from every account of an Organization into OpenSearch and an S3 lake."""

__version__ = "0.1.0"
