"""The fault-injection suite: each case injects one fault into the real local stack on 127.0.0.1
(a killed process, a stopped server, a cut connection, poison input) and checks what the platform
answers against the generator's ground truth, with lost = 0 and duplicated = 0 unless the case
says otherwise. The shared fixtures (`cfg`, `stack`, `spark_reader`, `unique`) are in
tests/conftest.py; the drivers for the stream and the batch in tests/integration/{speedkit,batchkit}.py.
"""
